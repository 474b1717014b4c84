//! Whether a host qualifies for a service, and why no host can take one, in a person's words:
//! the feasibility half of placement, apart from the choosing in the parent module, so the
//! reasons a person reads live in one place.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use atoll_spec::Selector;

use super::{Free, ServiceWant};
use crate::host::{Host, oci_arch};
use crate::manifest::{DeviceClass, Requires};

/// Whether `host` (whose selector view is `facts`) meets everything of a service but capacity.
pub(super) fn qualifies(
    host: &Host,
    facts: &BTreeMap<String, String>,
    classes: &[DeviceClass],
    selector: Option<&Selector>,
    requires: &Requires,
) -> Result<(), String> {
    if let Some(selector) = selector
        && !selector.matches(facts)
    {
        return Err(format!(
            "{} does not match placement.hosts ({})",
            host.name,
            selector.source()
        ));
    }
    for class in &requires.devices {
        let count = facts
            .get(&format!("{}{class}", crate::host::DEVICE_FACT_PREFIX))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        if count == 0 {
            return Err(format!(
                "no device of class {class} on {} ({} has: {})",
                host.name,
                host.name,
                classes_of(host, classes)
            ));
        }
    }
    for (key, value) in &requires.host_labels {
        match host.labels.get(key) {
            Some(v) if v == value => {}
            Some(v) => {
                return Err(format!(
                    "{} has label {key}={v}, not {key}={value}",
                    host.name
                ));
            }
            None => return Err(format!("{} lacks label {key}={value}", host.name)),
        }
    }
    if let Some(arch) = &requires.arch {
        let have = oci_arch(&host.inventory.arch);
        if have != arch {
            return Err(format!("{} is {have}, not {arch}", host.name));
        }
    }
    Ok(())
}

/// The classes of `classes` the host's devices have, for a reason: `serial, gpu` or `none`.
fn classes_of(host: &Host, classes: &[DeviceClass]) -> String {
    let have: Vec<&str> = classes
        .iter()
        .filter(|c| host.devices_of(c).next().is_some())
        .map(|c| c.name.as_str())
        .collect();
    if have.is_empty() {
        "none".into()
    } else {
        have.join(", ")
    }
}

/// Why no host can take a replica of `service`: each host's reason.
pub(super) fn why_none(
    hosts: &[&Host],
    facts: &[BTreeMap<String, String>],
    fixed: &[Result<(), String>],
    free: &[Free],
    service: &ServiceWant<'_>,
    classes: &[DeviceClass],
) -> String {
    // The usual case, a missing device class on every host, in a person's words.
    if let Some(class) = service.requires.devices.iter().find(|class| {
        facts.iter().all(|f| {
            f.get(&format!("{}{class}", crate::host::DEVICE_FACT_PREFIX))
                .is_none_or(|n| n == "0")
        })
    }) {
        let has: Vec<String> = hosts
            .iter()
            .map(|h| format!("{} has: {}", h.name, classes_of(h, classes)))
            .collect();
        return format!("no host with device class {class} ({})", has.join("; "));
    }
    let mut out = format!("no host can run service {}: ", service.name);
    for (i, h) in hosts.iter().enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        match &fixed[i] {
            Err(why) => out.push_str(why),
            Ok(()) => {
                let _ = write!(
                    out,
                    "{} has {} CPU and {} memory free, a replica needs {} CPU and {}",
                    h.name,
                    cpu(free[i].cpu_millis),
                    bytes(free[i].memory),
                    cpu(service.cpu_millis),
                    bytes(service.memory)
                );
            }
        }
    }
    out
}

fn cpu(millis: u64) -> String {
    if millis.is_multiple_of(1000) {
        (millis / 1000).to_string()
    } else {
        format!("{millis}m")
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)];
    for (unit, m) in UNITS {
        if n >= m {
            let tenths = n * 10 / m;
            return if tenths.is_multiple_of(10) {
                format!("{}{unit}", tenths / 10)
            } else {
                format!("{}.{}{unit}", tenths / 10, tenths % 10)
            };
        }
    }
    n.to_string()
}
