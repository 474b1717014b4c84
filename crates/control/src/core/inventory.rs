//! What the control plane accepts of a host's inventory, and the events it makes of a change.
//!
//! An agent sends its whole inventory whenever it changed (`PUT
//! /v1/sites/{site}/hosts/{host}/inventory`), not a delta: the control plane keeps the last one
//! and says what changed between the two, one event per device that appeared, went missing,
//! came back or was dropped, and one per changed fact a selector reads. Sending the whole keeps
//! the agent simple and a lost answer harmless (the same inventory twice makes no event).
//!
//! Choices where the issue is silent:
//! - A device is known by its path. A device at a known path whose attributes changed (another
//!   camera plugged in where the last one was) is the old one dropped and the new one appeared.
//! - An inventory that arrives with a device already missing (its agent restarted during the
//!   grace) says it appeared and went missing, so the events tell what the host shows.
//! - When the stored inventory cannot be read (none was stored, or it predates a field that
//!   is now required), its devices are taken as none and no fact is said to change: the events
//!   are the devices that appeared.
//! - Every problem of an inventory is listed (up to [`events::MAX_PROBLEMS`]), naming the field
//!   and the bound, as for reports.

use atoll_api::host::{
    Device, Inventory, MAX_ADDRESSES, MAX_CAPABILITIES, MAX_DEVICES, MAX_INVENTORY_STRING_BYTES,
};
use atoll_spec::Diagnostic;

use super::events;

/// The kind of the events made of inventory changes.
pub const EVENT_KIND: &str = "inventory";

/// Every way `inventory` passes the bounds of `atoll_api::host`, each naming its field and
/// limit; empty when it is within them.
pub fn check(inventory: &Inventory) -> Vec<Diagnostic> {
    let mut problems = Vec::new();
    let mut problem = |path: String, message: String| {
        if problems.len() < events::MAX_PROBLEMS {
            problems.push(Diagnostic {
                file: String::new(),
                line: 0,
                column: 0,
                path,
                message,
                hint: None,
            });
        }
    };
    for (field, count, limit) in [
        ("devices", inventory.devices.len(), MAX_DEVICES),
        ("addresses", inventory.addresses.len(), MAX_ADDRESSES),
        (
            "capabilities",
            inventory.capabilities.len(),
            MAX_CAPABILITIES,
        ),
    ] {
        if count > limit {
            problem(
                format!("inventory.{field}"),
                format!("{count} entries, over the limit of {limit}"),
            );
        }
    }
    let mut strings: Vec<(String, &str)> = vec![
        ("hostname".into(), &inventory.hostname),
        ("arch".into(), &inventory.arch),
        ("os".into(), &inventory.os),
        ("kernel".into(), &inventory.kernel),
        ("cpu_model".into(), &inventory.cpu_model),
        ("runtime.name".into(), &inventory.runtime.name),
        ("runtime.version".into(), &inventory.runtime.version),
        ("agent_version".into(), &inventory.agent_version),
    ];
    for (i, a) in inventory.addresses.iter().enumerate() {
        strings.push((format!("addresses[{i}]"), a));
    }
    for (i, c) in inventory.capabilities.iter().enumerate() {
        strings.push((format!("capabilities[{i}]"), c));
    }
    for (i, d) in inventory.devices.iter().enumerate() {
        for (name, value) in [
            ("kind", &d.kind),
            ("path", &d.path),
            ("name", &d.name),
            ("subsystem", &d.subsystem),
            ("vendor", &d.vendor),
            ("product", &d.product),
            ("serial", &d.serial),
        ] {
            strings.push((format!("devices[{i}].{name}"), value));
        }
        if let Some(since) = &d.missing_since {
            strings.push((format!("devices[{i}].missing_since"), since));
        }
    }
    for (field, value) in strings {
        if value.len() > MAX_INVENTORY_STRING_BYTES {
            problem(
                format!("inventory.{field}"),
                format!(
                    "{} bytes, over the limit of {MAX_INVENTORY_STRING_BYTES}",
                    value.len()
                ),
            );
        }
    }
    // The control plane lists it for the site's other hosts to dial: it must be an address.
    if let Some(address) = &inventory.site_address
        && address.parse::<std::net::SocketAddr>().is_err()
    {
        let shown: String = address.chars().take(64).collect();
        problem(
            "inventory.site_address".into(),
            format!("{shown:?} is not an ip:port"),
        );
    }
    for (i, d) in inventory.devices.iter().enumerate() {
        if let Some(since) = &d.missing_since
            && since.len() <= MAX_INVENTORY_STRING_BYTES
            && humantime::parse_rfc3339_weak(since).is_err()
        {
            problem(
                format!("inventory.devices[{i}].missing_since"),
                format!("{since:?} is not an RFC 3339 time"),
            );
        }
    }
    problems
}

/// The events of host `host`'s inventory going from `old` (None when none could be read) to
/// `new`: devices first, in path order, each named by the device classes of `classes` it has
/// (`camera /dev/video1 …`, or `device …` when none), then facts.
pub fn changes(
    host: &str,
    old: Option<&Inventory>,
    new: &Inventory,
    classes: &[atoll_api::DeviceClass],
) -> Vec<String> {
    let mut out = Vec::new();
    let before = old.map_or(&[][..], |o| o.devices.as_slice());
    let find = |devices: &'_ [Device], path: &str| -> Option<usize> {
        devices.iter().position(|d| d.path == path)
    };
    let mut paths: Vec<&str> = before
        .iter()
        .chain(&new.devices)
        .map(|d| d.path.as_str())
        .collect();
    paths.sort_unstable();
    paths.dedup();
    for path in paths {
        let was = find(before, path).map(|i| &before[i]);
        let is = find(&new.devices, path).map(|i| &new.devices[i]);
        let said = |d: &Device, what: &str| {
            let names: Vec<&str> = classes
                .iter()
                .filter(|c| c.matches(d))
                .map(|c| c.name.as_str())
                .collect();
            let noun = if names.is_empty() {
                "device".to_owned()
            } else {
                names.join(", ")
            };
            format!("host {host}: {noun} {} {what}", described(d))
        };
        match (was, is) {
            (None, Some(d)) => {
                out.push(said(d, "appeared"));
                if d.missing_since.is_some() {
                    out.push(said(d, "went missing"));
                }
            }
            (Some(d), None) => out.push(said(d, "was dropped")),
            (Some(w), Some(d)) if !same_device(w, d) => {
                out.push(said(w, "was dropped"));
                out.push(said(d, "appeared"));
                if d.missing_since.is_some() {
                    out.push(said(d, "went missing"));
                }
            }
            (Some(w), Some(d)) => match (&w.missing_since, &d.missing_since) {
                (None, Some(_)) => out.push(said(d, "went missing")),
                (Some(_), None) => out.push(said(d, "came back")),
                _ => {}
            },
            (None, None) => {}
        }
    }
    let Some(old) = old else {
        return out;
    };
    let facts: [(&str, String, String); 8] = [
        ("memory", bytes(old.memory_bytes), bytes(new.memory_bytes)),
        ("cpus", old.cpus.to_string(), new.cpus.to_string()),
        ("disk", bytes(old.disk_bytes), bytes(new.disk_bytes)),
        ("arch", old.arch.clone(), new.arch.clone()),
        ("os", old.os.clone(), new.os.clone()),
        (
            "runtime version",
            old.runtime.version.clone(),
            new.runtime.version.clone(),
        ),
        (
            "agent version",
            old.agent_version.clone(),
            new.agent_version.clone(),
        ),
        (
            "site address",
            old.site_address.clone().unwrap_or_default(),
            new.site_address.clone().unwrap_or_default(),
        ),
    ];
    for (name, was, is) in facts {
        if was != is {
            out.push(format!(
                "host {host}: {name} changed from {} to {}",
                shown(&was),
                shown(&is)
            ));
        }
    }
    out
}

/// Whether two reports of a device at one path are the same device (its missing time aside).
fn same_device(a: &Device, b: &Device) -> bool {
    Device {
        missing_since: None,
        ..a.clone()
    } == Device {
        missing_since: None,
        ..b.clone()
    }
}

/// `/dev/video1 (video4linux, HD Pro Webcam C920)`: the path, with the subsystem and name
/// that are known.
fn described(d: &Device) -> String {
    let known: Vec<&str> = [d.subsystem.as_str(), d.name.as_str()]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect();
    if known.is_empty() {
        d.path.clone()
    } else {
        format!("{} ({})", d.path, known.join(", "))
    }
}

fn shown(value: &str) -> &str {
    if value.is_empty() { "(none)" } else { value }
}

/// A size in the largest binary unit that keeps it whole at one decimal: `8 GiB`, `1.5 TiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut unit = 0;
    let mut value = n as f64;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let text = format!("{value:.1}");
    let text = text.strip_suffix(".0").unwrap_or(&text);
    format!("{text} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn camera(path: &str) -> Device {
        Device {
            kind: "camera".into(),
            path: path.into(),
            name: "HD Pro Webcam C920".into(),
            subsystem: "video4linux".into(),
            vendor: "046d".into(),
            product: "082d".into(),
            serial: "A1B2".into(),
            missing_since: None,
        }
    }

    fn with(devices: Vec<Device>) -> Inventory {
        Inventory {
            hostname: "h1".into(),
            arch: "x86_64".into(),
            os: "Debian 12".into(),
            cpus: 4,
            memory_bytes: 8 << 30,
            disk_bytes: 100 << 30,
            agent_version: "0.9.0".into(),
            devices,
            ..Inventory::default()
        }
    }

    fn missing(mut d: Device) -> Device {
        d.missing_since = Some("2026-01-01T00:00:00Z".into());
        d
    }

    #[test]
    fn a_device_appears_goes_missing_comes_back_and_is_dropped() {
        let none = with(vec![]);
        let plugged = with(vec![camera("/dev/video1")]);
        let gone = with(vec![missing(camera("/dev/video1"))]);
        assert_eq!(
            changes("h1", Some(&none), &plugged, &[]),
            ["host h1: device /dev/video1 (video4linux, HD Pro Webcam C920) appeared"]
        );
        assert_eq!(
            changes("h1", Some(&plugged), &gone, &[]),
            ["host h1: device /dev/video1 (video4linux, HD Pro Webcam C920) went missing"]
        );
        assert_eq!(
            changes("h1", Some(&gone), &plugged, &[]),
            ["host h1: device /dev/video1 (video4linux, HD Pro Webcam C920) came back"]
        );
        assert_eq!(
            changes("h1", Some(&gone), &none, &[]),
            ["host h1: device /dev/video1 (video4linux, HD Pro Webcam C920) was dropped"]
        );
        assert!(changes("h1", Some(&gone), &gone, &[]).is_empty());
        assert!(changes("h1", Some(&plugged), &plugged, &[]).is_empty());
    }

    #[test]
    fn another_device_at_a_known_path_is_the_old_dropped_and_the_new_appeared() {
        let mut serial = Device {
            kind: String::new(),
            path: "/dev/video1".into(),
            ..Device::default()
        };
        let old = with(vec![camera("/dev/video1")]);
        assert_eq!(
            changes("h1", Some(&old), &with(vec![serial.clone()]), &[]),
            [
                "host h1: device /dev/video1 (video4linux, HD Pro Webcam C920) was dropped",
                "host h1: device /dev/video1 appeared",
            ]
        );
        serial.missing_since = Some("2026-01-01T00:00:00Z".into());
        assert_eq!(
            changes("h1", None, &with(vec![serial]), &[]),
            [
                "host h1: device /dev/video1 appeared",
                "host h1: device /dev/video1 went missing",
            ]
        );
    }

    #[test]
    fn changed_facts_are_one_event_each_and_an_unreadable_old_one_makes_none() {
        let old = with(vec![]);
        let mut new = with(vec![camera("/dev/video0")]);
        new.memory_bytes = 16 << 30;
        new.cpus = 8;
        new.disk_bytes = 1536 << 30;
        new.arch = "aarch64".into();
        new.os = String::new();
        new.runtime.version = "27.1".into();
        new.agent_version = "0.10.0".into();
        new.hostname = "renamed".into();
        new.site_address = Some("10.0.0.5:7443".into());
        assert_eq!(
            changes("h1", Some(&old), &new, &[]),
            [
                "host h1: device /dev/video0 (video4linux, HD Pro Webcam C920) appeared",
                "host h1: memory changed from 8 GiB to 16 GiB",
                "host h1: cpus changed from 4 to 8",
                "host h1: disk changed from 100 GiB to 1.5 TiB",
                "host h1: arch changed from x86_64 to aarch64",
                "host h1: os changed from Debian 12 to (none)",
                "host h1: runtime version changed from (none) to 27.1",
                "host h1: agent version changed from 0.9.0 to 0.10.0",
                "host h1: site address changed from (none) to 10.0.0.5:7443",
            ]
        );
        assert_eq!(
            changes("h1", None, &new, &[]),
            ["host h1: device /dev/video0 (video4linux, HD Pro Webcam C920) appeared"]
        );
    }

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(u64::MAX), "16777216 TiB");
    }

    #[test]
    fn an_inventory_within_the_bounds_passes_and_every_bound_is_named() {
        assert!(check(&with(vec![camera("/dev/video0")])).is_empty());
        let long = "x".repeat(MAX_INVENTORY_STRING_BYTES + 1);
        let mut inv = with(vec![camera("/dev/video0"); MAX_DEVICES + 1]);
        inv.devices[0].name.clone_from(&long);
        inv.devices[1].missing_since = Some("yesterday".into());
        inv.addresses = vec!["10.0.0.1".into(); MAX_ADDRESSES + 1];
        inv.site_address = Some("lan-host:7443".into());
        inv.hostname = long;
        let paths: Vec<String> = check(&inv).into_iter().map(|d| d.path).collect();
        assert_eq!(
            paths,
            [
                "inventory.devices",
                "inventory.addresses",
                "inventory.hostname",
                "inventory.devices[0].name",
                "inventory.site_address",
                "inventory.devices[1].missing_since",
            ]
        );
        let exactly = with(vec![
            camera(&"p".repeat(MAX_INVENTORY_STRING_BYTES));
            MAX_DEVICES
        ]);
        assert!(check(&exactly).is_empty());
        let mut addressed = with(Vec::new());
        addressed.site_address = Some("[fd00::7]:7443".into());
        assert!(check(&addressed).is_empty());
    }

    #[test]
    fn a_device_is_named_by_its_classes() {
        let camera = atoll_api::DeviceClass {
            name: "camera".into(),
            rules: vec![atoll_api::DeviceRule {
                subsystem: Some("video4linux".into()),
                ..Default::default()
            }],
            gpu: None,
        };
        let new = Inventory {
            devices: vec![Device {
                path: "/dev/video1".into(),
                subsystem: "video4linux".into(),
                ..Device::default()
            }],
            ..Inventory::default()
        };
        assert_eq!(
            changes("h1", Some(&Inventory::default()), &new, &[camera]),
            ["host h1: camera /dev/video1 (video4linux) appeared"]
        );
    }
}
