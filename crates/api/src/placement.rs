//! Which host of a site runs which replica: the one placement decision, made by the control
//! plane (to choose the sites a deployment is placed at, and to say why it is not placed at the
//! others) and by the site itself (each agent runs the replicas given to its own host), so a
//! site decides offline exactly as the control plane would.
//!
//! A host qualifies for a service when it matches the deployment's host selector
//! (`placement.hosts`, over [`Host::facts`]), has at least one device of every class the service
//! requires, carries its required labels and architecture, and has the free capacity its
//! resources ask for: the host's CPUs and memory minus the requests of the replicas placed on it
//! before, not measured use. A deployment is placed at a site only whole: every replica of every
//! service finds a host, or none runs and the deployment is unplaced with the reason. Deployments
//! are placed in the order given (the compiler gives them by name), each replica on the
//! qualifying host with the fewest replicas of its service so far, then the most free memory,
//! then the first name, so replicas spread and the answer never depends on anything but the
//! input.
//!
//! A site with no host enrolled yet places a deployment that asks nothing of hosts beyond
//! resources (capacity is judged once a host reports it, and the site is placed again then), and
//! refuses one that needs devices, labels, an architecture or a host selector: no host can have
//! them yet. An agent that does not advertise [`capability::HOST_PLACEMENT`] ignores host
//! requirements, and one without [`capability::DEVICES`] maps no device: a deployment that needs
//! what one of a site's agents cannot honour is not placed there, naming the agent to upgrade.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use atoll_spec::Selector;

use crate::host::{Host, capability, oci_arch};
use crate::manifest::{DeviceClass, Requires};

/// What one deployment asks of a site's hosts.
#[derive(Debug, Clone)]
pub struct Want<'a> {
    pub deployment: &'a str,
    /// `placement.hosts`.
    pub hosts: Option<&'a Selector>,
    pub services: Vec<ServiceWant<'a>>,
}

/// What one service asks of the hosts its replicas run on.
#[derive(Debug, Clone)]
pub struct ServiceWant<'a> {
    pub name: &'a str,
    /// How many replicas; ignored with `every_host`.
    pub replicas: u32,
    /// One replica on every qualifying host.
    pub every_host: bool,
    pub requires: Requires,
    /// Thousandths of a core each replica reserves.
    pub cpu_millis: u64,
    /// Bytes of memory each replica reserves.
    pub memory: u64,
}

impl Want<'_> {
    /// Whether the deployment asks anything of hosts beyond capacity.
    pub fn reads_hosts(&self) -> bool {
        self.hosts.is_some() || self.services.iter().any(|s| !s.requires.is_empty())
    }

    fn maps_devices(&self) -> bool {
        self.services.iter().any(|s| !s.requires.devices.is_empty())
    }
}

/// One replica given to one host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Assignment {
    pub service: String,
    pub index: u32,
    pub host: String,
}

/// The decision for one site.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// Each placed deployment's replicas and their hosts (none when the site has no host yet).
    pub placed: BTreeMap<String, Vec<Assignment>>,
    /// Each deployment that is not placed, and why, for a person.
    pub unplaced: BTreeMap<String, String>,
}

impl Decision {
    /// The replicas of `deployment` given to `host`, by service, as indexes.
    pub fn on_host<'a>(
        &'a self,
        deployment: &str,
        host: &'a str,
    ) -> impl Iterator<Item = &'a Assignment> + 'a {
        self.placed
            .get(deployment)
            .into_iter()
            .flatten()
            .filter(move |a| a.host == host)
    }
}

/// Free capacity of one host while placing.
#[derive(Debug, Clone, Copy)]
struct Free {
    cpu_millis: u64,
    memory: u64,
}

/// Places `wants`, in order, on `hosts`; see the module documentation for the rules.
pub fn place(hosts: &[Host], classes: &[DeviceClass], wants: &[Want<'_>]) -> Decision {
    let facts: Vec<BTreeMap<String, String>> = hosts.iter().map(|h| h.facts(classes)).collect();
    let mut free: Vec<Free> = hosts
        .iter()
        .map(|h| Free {
            cpu_millis: u64::from(h.inventory.cpus) * 1000,
            memory: h.inventory.memory_bytes,
        })
        .collect();
    let mut decision = Decision::default();
    for want in wants {
        match place_one(hosts, &facts, classes, &free, want) {
            Ok((assignments, after)) => {
                free = after;
                decision
                    .placed
                    .insert(want.deployment.to_owned(), assignments);
            }
            Err(reason) => {
                decision.unplaced.insert(want.deployment.to_owned(), reason);
            }
        }
    }
    decision
}

/// One deployment on the capacity left by those before it: its assignments and the capacity
/// left after it, or why it cannot be placed.
fn place_one(
    hosts: &[Host],
    facts: &[BTreeMap<String, String>],
    classes: &[DeviceClass],
    free: &[Free],
    want: &Want<'_>,
) -> Result<(Vec<Assignment>, Vec<Free>), String> {
    if hosts.is_empty() {
        return if want.reads_hosts() {
            Err(
                "no host enrolled yet: the deployment needs hosts with the facts it requires"
                    .into(),
            )
        } else {
            Ok((Vec::new(), Vec::new()))
        };
    }
    if want.reads_hosts()
        && let Some(h) = hosts
            .iter()
            .find(|h| !h.inventory.can(capability::HOST_PLACEMENT))
    {
        return Err(format!(
            "the agent on {} cannot check host requirements; upgrade it",
            h.name
        ));
    }
    if want.maps_devices()
        && let Some(h) = hosts.iter().find(|h| !h.inventory.can(capability::DEVICES))
    {
        return Err(format!(
            "the agent on {} cannot map devices; upgrade it",
            h.name
        ));
    }
    let mut free = free.to_vec();
    let mut assignments = Vec::new();
    for service in &want.services {
        // Each host's fixed qualification for this service: `Ok` or why not.
        let fixed: Vec<Result<(), String>> = hosts
            .iter()
            .zip(facts)
            .map(|(h, f)| qualifies(h, f, classes, want.hosts, &service.requires))
            .collect();
        let mut on_host = vec![0u32; hosts.len()];
        let fits =
            |free: &Free| free.cpu_millis >= service.cpu_millis && free.memory >= service.memory;
        if service.every_host {
            let mut index = 0;
            for (i, ok) in fixed.iter().enumerate() {
                if ok.is_ok() && fits(&free[i]) {
                    take(&mut free[i], service);
                    assignments.push(Assignment {
                        service: service.name.to_owned(),
                        index,
                        host: hosts[i].name.clone(),
                    });
                    index += 1;
                }
            }
            if index == 0 {
                return Err(why_none(hosts, facts, &fixed, &free, service, classes));
            }
            continue;
        }
        for index in 0..service.replicas {
            let best = (0..hosts.len())
                .filter(|&i| fixed[i].is_ok() && fits(&free[i]))
                .min_by(|&a, &b| {
                    on_host[a]
                        .cmp(&on_host[b])
                        .then(free[b].memory.cmp(&free[a].memory))
                        .then(hosts[a].name.cmp(&hosts[b].name))
                });
            let Some(i) = best else {
                return Err(why_none(hosts, facts, &fixed, &free, service, classes));
            };
            take(&mut free[i], service);
            on_host[i] += 1;
            assignments.push(Assignment {
                service: service.name.to_owned(),
                index,
                host: hosts[i].name.clone(),
            });
        }
    }
    Ok((assignments, free))
}

fn take(free: &mut Free, service: &ServiceWant<'_>) {
    free.cpu_millis -= service.cpu_millis;
    free.memory -= service.memory;
}

/// Whether `host` (whose selector view is `facts`) meets everything of a service but capacity.
fn qualifies(
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
fn why_none(
    hosts: &[Host],
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

#[cfg(test)]
mod tests;
