//! `atoll describe site|app|deployment|deviceclass|host NAME`: one resource, everything about
//! it, for people.

use std::fmt::Write as _;

use atoll_api::agent::{EventView, HostView};
use atoll_api::{ApplicationView, DeploymentView, List, ResourceView, SiteView};
use atoll_spec::application::Mode;
use atoll_spec::{Kind, Resource};

use crate::client::Client;
use crate::config::Config;
use crate::error::Result;
use crate::output::{self, age};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// site, app, deployment, deviceclass or host.
    pub kind: String,
    pub name: String,
}

pub async fn run(args: Args) -> Result<()> {
    if matches!(args.kind.to_ascii_lowercase().as_str(), "host" | "hosts") {
        let client = Client::from_config(&Config::load()?)?;
        let view: HostView = client.get(&format!("/v1/hosts/{}", args.name)).await?;
        output::print(&host(&view));
        return Ok(());
    }
    let kind = output::kind_arg(&args.kind, "describe").map_err(|_| {
        crate::error::CliError::user(format!(
            "cannot describe `{}`: choose site, app, deployment or host",
            args.kind
        ))
    })?;
    let client = Client::from_config(&Config::load()?)?;
    let path = format!("/v1/{}/{}", kind.plural(), args.name);
    let text = match kind {
        Kind::Site => {
            let view: SiteView = client.get(&path).await?;
            let events: List<EventView> =
                client.get(&format!("{path}/events?limit={EVENTS}")).await?;
            site(&view, &events.items)
        }
        Kind::Application => application(&client.get(&path).await?),
        Kind::Deployment => deployment(&client.get(&path).await?),
        Kind::DeviceClass => device_class(&client.get(&path).await?),
    };
    output::print(&text);
    Ok(())
}

/// The newest events `describe site` shows.
const EVENTS: u32 = 20;

fn header(out: &mut String, view: &ResourceView) {
    let _ = writeln!(out, "Name:         {}", view.resource.name());
    let _ = writeln!(out, "Kind:         {}", view.resource.kind());
    let _ = writeln!(out, "Generation:   {}", view.generation);
    let _ = writeln!(
        out,
        "Created:      {} ({} ago)",
        view.created_at,
        age(&view.created_at)
    );
    let _ = writeln!(
        out,
        "Updated:      {} ({} ago)",
        view.updated_at,
        age(&view.updated_at)
    );
}

fn map_block(out: &mut String, title: &str, map: &std::collections::BTreeMap<String, String>) {
    if map.is_empty() {
        let _ = writeln!(out, "{title:<13} <none>");
        return;
    }
    let _ = writeln!(out, "{title}");
    for (k, v) in map {
        let _ = writeln!(out, "  {k}: {v}");
    }
}

/// The site, then its newest events (newest first, as the control plane lists them).
pub fn site(s: &SiteView, events: &[EventView]) -> String {
    let mut out = String::new();
    header(&mut out, &s.view);
    if let Resource::Site(site) = &s.view.resource {
        if let Some(d) = &site.description {
            let _ = writeln!(out, "Description:  {d}");
        }
        map_block(&mut out, "Labels:", &site.labels);
        map_block(&mut out, "Variables:", &site.variables);
    }
    let revision = s
        .revision
        .map_or_else(|| "none yet".into(), |r| r.to_string());
    let _ = writeln!(out, "Manifest:     revision {revision}");
    let applied = s
        .applied_revision
        .map_or_else(|| "none reported".into(), |r| r.to_string());
    let _ = writeln!(
        out,
        "Hosts:        {} ({}), running revision {applied}",
        s.hosts,
        if s.connected { "connected" } else { "offline" }
    );
    let _ = writeln!(out, "Health:       {}", s.health.as_str());
    if s.dropped_reports == 0 {
        let _ = writeln!(out, "Dropped:      no reports");
    } else {
        let _ = writeln!(
            out,
            "Dropped:      {} report{} (an agent's outbox was full while offline: those events and statuses are lost)",
            s.dropped_reports,
            if s.dropped_reports == 1 { "" } else { "s" }
        );
    }
    if !s.conditions.is_empty() {
        let _ = writeln!(out, "Conditions:");
        for c in &s.conditions {
            let _ = writeln!(
                out,
                "  {}: {} since {}: {}",
                c.host,
                c.condition.kind.as_str(),
                c.condition.since,
                c.condition.message
            );
        }
    }
    if s.applications.is_empty() {
        let _ = writeln!(out, "Applications: <none>");
    } else {
        let _ = writeln!(out, "Applications:");
        for p in &s.applications {
            let _ = writeln!(
                out,
                "  {}@{} (deployment {})",
                p.application, p.version, p.deployment
            );
        }
    }
    if s.events_pruned > 0 {
        let _ = writeln!(
            out,
            "Pruned:       {} events by the control plane's retention (the oldest received)",
            s.events_pruned
        );
    }
    if events.is_empty() {
        let _ = writeln!(out, "Events:       <none>");
    } else {
        let _ = writeln!(out, "Events:");
        out.push_str(&indent(&crate::get::events_table(events)));
    }
    out
}

pub fn application(a: &ApplicationView) -> String {
    let mut out = String::new();
    header(&mut out, &a.view);
    if let Resource::Application(app) = &a.view.resource {
        let _ = writeln!(out, "Version:      {}", app.version);
        if let Some(d) = &app.description {
            let _ = writeln!(out, "Description:  {d}");
        }
        let _ = writeln!(out, "Services:");
        for s in &app.services {
            let replicas = match s.mode {
                Mode::EveryHost => "every host".to_owned(),
                Mode::Replicated => format!(
                    "{} replica{}",
                    s.replicas,
                    if s.replicas == 1 { "" } else { "s" }
                ),
            };
            let ports: Vec<String> = s
                .ports
                .iter()
                .map(|p| {
                    p.host.map_or_else(
                        || p.container.to_string(),
                        |h| format!("{h}->{}", p.container),
                    )
                })
                .collect();
            let ports = if ports.is_empty() {
                String::new()
            } else {
                format!(", ports {}", ports.join(" "))
            };
            let _ = writeln!(out, "  {}: {} ({replicas}{ports})", s.name, s.image);
        }
    }
    let _ = writeln!(out, "Versions:");
    for v in &a.versions {
        let _ = writeln!(
            out,
            "  {} applied {} ({} ago)",
            v.version,
            v.applied_at,
            age(&v.applied_at)
        );
    }
    let deployments = if a.deployments.is_empty() {
        "<none>".to_owned()
    } else {
        a.deployments.join(", ")
    };
    let _ = writeln!(out, "Deployments:  {deployments}");
    out
}

pub fn deployment(d: &DeploymentView) -> String {
    let mut out = String::new();
    header(&mut out, &d.view);
    if let Resource::Deployment(dep) = &d.view.resource {
        let following = if dep.version.is_some() {
            "pinned"
        } else {
            "following the newest applied"
        };
        let version = d.version.clone().unwrap_or_else(|| "<missing>".into());
        let _ = writeln!(
            out,
            "Application:  {} version {version} ({following})",
            dep.application
        );
        let _ = writeln!(out, "Target:       {}", crate::get::target(d));
        let _ = writeln!(out, "Running:      {}", crate::get::running(d));
        let _ = writeln!(out, "Placement:    {}", dep.placement.sites.source());
        if let Some(hosts) = &dep.placement.hosts {
            let _ = writeln!(out, "On hosts:     {}", hosts.source());
        }
        if let Some(r) = &dep.rollout {
            let _ = write!(
                out,
                "Rollout:\n{}",
                indent(&output::yaml(r).unwrap_or_default())
            );
        }
    }
    let _ = writeln!(out, "Sites:        {} selected", d.sites.len());
    for s in &d.sites {
        let _ = writeln!(out, "  {s}");
    }
    if !d.unplaced.is_empty() {
        let _ = writeln!(
            out,
            "Not placed:   {} selected by their labels, but no host qualifies",
            d.unplaced.len()
        );
        for u in &d.unplaced {
            let _ = writeln!(out, "  {}: {}", u.site, u.reason);
        }
    }
    out
}

/// The class and its rules, one line each: a device has the class when any line matches it.
pub fn device_class(v: &ResourceView) -> String {
    let mut out = String::new();
    header(&mut out, v);
    if let Resource::DeviceClass(c) = &v.resource {
        if let Some(d) = &c.description {
            let _ = writeln!(out, "Description:  {d}");
        }
        if let Some(gpu) = c.gpu {
            let _ = writeln!(out, "GPU:          {}", gpu.as_str());
        }
        let _ = writeln!(out, "Match (any rule; every field of a rule):");
        for rule in &c.rules {
            let fields = [
                ("subsystem", &rule.subsystem),
                ("vendor", &rule.vendor),
                ("product", &rule.product),
                ("name", &rule.name),
                ("path", &rule.path),
                ("serial", &rule.serial),
            ];
            let given: Vec<String> = fields
                .iter()
                .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
                .collect();
            let _ = writeln!(out, "  - {}", given.join(" "));
        }
    }
    out
}

/// A host: where it belongs, its connection and credentials, its labels, the facts its agent
/// reports, its devices and what is wrong on it.
pub fn host(h: &HostView) -> String {
    let mut out = String::new();
    let i = &h.inventory;
    let or_unknown = |text: &str| {
        if text.is_empty() {
            "<unknown>".to_owned()
        } else {
            text.to_owned()
        }
    };
    let _ = writeln!(out, "Name:         {}", h.id);
    let _ = writeln!(out, "Hostname:     {}", or_unknown(&i.hostname));
    let _ = writeln!(out, "Site:         {}", h.site);
    match &h.detached_at {
        Some(at) => {
            let _ = writeln!(
                out,
                "State:        detached {at} ({} ago), when its site was deleted",
                age(at)
            );
        }
        None => {
            let _ = writeln!(out, "State:        attached");
        }
    }
    let _ = writeln!(
        out,
        "Enrolled:     {} ({} ago)",
        h.enrolled_at,
        age(&h.enrolled_at)
    );
    let _ = writeln!(out, "Certificate:  expires {}", h.certificate_expires_at);
    if h.sealing_key_pending {
        let _ = writeln!(
            out,
            "Sealing key:  a new key waits for approval (`atoll host approve-key {}`)",
            h.id
        );
    }
    let seen = h.last_seen.as_deref().map_or_else(
        || "never seen".to_owned(),
        |t| format!("last seen {t} ({} ago)", age(t)),
    );
    let _ = writeln!(
        out,
        "Connection:   {}, {seen}",
        if h.connected { "connected" } else { "offline" }
    );
    map_block(&mut out, "Labels:", &h.labels);
    let arch = atoll_api::host::oci_arch(&i.arch);
    let arch = if arch == i.arch {
        or_unknown(arch)
    } else {
        format!("{arch} (reported {})", i.arch)
    };
    let list = |items: &[String]| {
        if items.is_empty() {
            "<none>".to_owned()
        } else {
            items.join(", ")
        }
    };
    let _ = writeln!(out, "Facts:");
    let _ = writeln!(out, "  arch:          {arch}");
    let _ = writeln!(out, "  os:            {}", or_unknown(&i.os));
    let _ = writeln!(out, "  kernel:        {}", or_unknown(&i.kernel));
    let _ = writeln!(out, "  cpus:          {}", i.cpus);
    let _ = writeln!(out, "  cpu model:     {}", or_unknown(&i.cpu_model));
    let _ = writeln!(
        out,
        "  memory:        {}",
        atoll_spec::units::ByteSize(i.memory_bytes)
    );
    let _ = writeln!(
        out,
        "  disk:          {}",
        atoll_spec::units::ByteSize(i.disk_bytes)
    );
    let _ = writeln!(
        out,
        "  runtime:       {}",
        or_unknown(format!("{} {}", i.runtime.name, i.runtime.version).trim())
    );
    let agent = if i.agent_version.is_empty() {
        "<unknown: an agent older than this field>".to_owned()
    } else {
        i.agent_version.clone()
    };
    let _ = writeln!(out, "  agent:         {agent}");
    let _ = writeln!(out, "  capabilities:  {}", list(&i.capabilities));
    let _ = writeln!(out, "  addresses:     {}", list(&i.addresses));
    if i.devices.is_empty() {
        let _ = writeln!(out, "Devices:      <none>");
    } else {
        let _ = writeln!(out, "Devices:");
        let mut t = output::Table::new(&[
            "PATH",
            "SUBSYSTEM",
            "VENDOR:PRODUCT",
            "NAME",
            "SERIAL",
            "MISSING SINCE",
        ]);
        let dash = |text: &str| {
            if text.is_empty() {
                "-".to_owned()
            } else {
                text.to_owned()
            }
        };
        for d in &i.devices {
            let ids = if d.vendor.is_empty() && d.product.is_empty() {
                "-".to_owned()
            } else {
                format!("{}:{}", d.vendor, d.product)
            };
            t.row(vec![
                d.path.clone(),
                dash(&d.subsystem),
                ids,
                dash(&d.name),
                dash(&d.serial),
                d.missing_since.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
        out.push_str(&indent(&t.render()));
    }
    match &h.status {
        None => {
            let _ = writeln!(out, "Applied:      nothing reported yet");
        }
        Some(s) => {
            let _ = writeln!(out, "Applied:      revision {}", s.applied_revision);
            if let Some(refused) = &s.refused {
                let _ = writeln!(out, "Refused:      {refused}");
            }
        }
    }
    cluster(&mut out, h);
    let conditions = h.status.as_ref().map_or(&[][..], |s| &s.conditions[..]);
    if conditions.is_empty() {
        let _ = writeln!(out, "Conditions:   <none>");
    } else {
        let _ = writeln!(out, "Conditions:");
        for c in conditions {
            let _ = writeln!(
                out,
                "  {} since {}: {}",
                c.kind.as_str(),
                c.since,
                c.message
            );
        }
    }
    out
}

/// The host's place in its site cluster and what it has left for replicas, as its agent last
/// reported them.
fn cluster(out: &mut String, h: &HostView) {
    let status = h.status.as_ref();
    match status.and_then(|s| s.cluster.as_ref()) {
        None => {
            let _ = writeln!(
                out,
                "Cluster:      none reported (a single-host site, or an agent older than the site cluster)"
            );
        }
        Some(c) => {
            let _ = writeln!(out, "Cluster:      {} in term {}", c.role.as_str(), c.term);
            let _ = writeln!(
                out,
                "  leader:        {}",
                c.leader
                    .as_deref()
                    .unwrap_or("<none known: an election runs>")
            );
            let voters = if c.voters.is_empty() {
                "<none known>".to_owned()
            } else {
                c.voters.join(", ")
            };
            let _ = writeln!(out, "  voters:        {voters}");
        }
    }
    if status.and_then(|s| s.free).is_some() {
        let (cpu, memory) = crate::get::free(h);
        let _ = writeln!(
            out,
            "Free:         {cpu} cpu, {memory} memory (what the replicas placed here do not request)"
        );
    } else {
        let _ = writeln!(out, "Free:         not reported");
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::get::tests::{PWNED, device_class_view, event, site_view};

    #[test]
    fn describe_deviceclass_shows_each_rule() {
        let text = device_class(&device_class_view());
        assert!(text.contains("Kind:         DeviceClass\n"), "{text}");
        assert!(text.contains("Description:  USB cameras\n"), "{text}");
        assert!(
            text.ends_with(
                "Match (any rule; every field of a rule):\n  - subsystem=video4linux name=*Camera*\n  - vendor=046d product=08e5\n"
            ),
            "{text}"
        );
        assert!(!text.contains("GPU:"), "{text}");
    }

    #[test]
    fn an_event_with_escape_sequences_is_printed_escaped_in_describe_site() {
        let text = site(&site_view(0), &[event(&format!("{PWNED}web exited"))]);
        assert!(
            text.contains("\\x1b]0;pwned\\x07\\x1b[2Jweb exited"),
            "{text}"
        );
        assert!(!text.contains('\x1b') && !text.contains('\x07'), "{text:?}");
        assert_eq!(output::terminal_safe(&text), text);
    }

    #[test]
    fn describe_site_shows_the_reports_agents_dropped() {
        insta::assert_snapshot!(site(&site_view(12), &[event("web replica 0 started")]));
    }

    fn host_view() -> HostView {
        serde_json::from_value(serde_json::json!({
            "id": "h-till-1",
            "site": "store-0042",
            "inventory": {
                "hostname": "till-1", "arch": "x86_64", "os": "Linux", "kernel": "6.1.0",
                "cpus": 4, "cpu_model": "Intel N100", "memory_bytes": 8u64 << 30,
                "disk_bytes": 64u64 << 30, "runtime": { "name": "docker", "version": "27.3" },
                "devices": [
                    { "kind": "camera", "path": "/dev/video0", "name": "HD Pro Webcam C920",
                      "subsystem": "video4linux", "vendor": "046d", "product": "082d",
                      "serial": "A1B2" },
                    { "kind": "serial", "path": "/dev/ttyUSB0", "subsystem": "tty",
                      "missing_since": "2026-12-03T10:00:00Z" },
                ],
                "agent_version": "0.9.0",
                "capabilities": ["host-placement", "devices"],
                "addresses": ["10.0.0.5"],
            },
            "enrolled_at": "2999-01-01T00:00:00Z",
            "certificate_expires_at": "2999-01-31T00:00:00Z",
            "connected": true,
            "last_seen": "2999-01-01T00:00:00Z",
            "status": {
                "applied_revision": 7, "replicas": [],
                "conditions": [{ "kind": "manifest_not_kept", "message": "disk full", "since": "2999-01-01T00:00:00Z" }],
                "cluster": { "role": "voter", "term": 4, "leader": "h-till-2", "voters": ["h-till-1", "h-till-2", "h-till-3"] },
                "free": { "cpu_millis": 2500, "memory_bytes": 6u64 << 30 },
            },
            "labels": { "size": "medium", "zone": "front" },
        }))
        .unwrap()
    }

    #[test]
    fn describe_host_shows_labels_facts_devices_and_conditions() {
        insta::assert_snapshot!(host(&host_view()));
    }

    #[test]
    fn describe_host_of_an_older_agent_says_what_it_does_not_know() {
        let mut view = host_view();
        view.inventory = atoll_api::host::Inventory::default();
        view.labels.clear();
        view.status = None;
        view.connected = false;
        view.last_seen = None;
        view.detached_at = Some("2999-01-01T00:00:00Z".into());
        let text = host(&view);
        for line in [
            "State:        detached 2999-01-01T00:00:00Z (0s ago), when its site was deleted",
            "Connection:   offline, never seen",
            "Labels:       <none>",
            "  arch:          <unknown>",
            "  agent:         <unknown: an agent older than this field>",
            "  capabilities:  <none>",
            "Devices:      <none>",
            "Applied:      nothing reported yet",
            "Cluster:      none reported (a single-host site, or an agent older than the site cluster)",
            "Free:         not reported",
            "Conditions:   <none>",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line:?} in:\n{text}"
            );
        }
    }

    /// Issue 15, item 6: a host standing for election knows no leader yet, and says so.
    #[test]
    fn describe_host_of_a_candidate_says_it_knows_no_leader() {
        let mut view = host_view();
        if let Some(c) = view.status.as_mut().and_then(|s| s.cluster.as_mut()) {
            c.role = atoll_api::agent::ClusterRole::Candidate;
            c.leader = None;
        }
        let text = host(&view);
        assert!(
            text.contains("Cluster:      candidate in term 4\n  leader:        <none known: an election runs>\n"),
            "{text}"
        );
    }

    /// Issue 12, item 13: what retention prunes is a loss, and is said.
    #[test]
    fn describe_site_says_how_many_events_retention_pruned() {
        let mut view = site_view(0);
        view.events_pruned = 12;
        assert!(site(&view, &[]).contains(
            "Pruned:       12 events by the control plane's retention (the oldest received)"
        ));
        assert!(!site(&site_view(0), &[]).contains("Pruned:"));
    }
}
