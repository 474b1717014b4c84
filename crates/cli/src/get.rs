//! `atoll get sites|apps|deployments|deviceclasses|manifest|audit [NAME] [-o table|yaml|json]`,
//! and `atoll get hosts [NAME] [--site SITE]`.

use atoll_api::agent::{EventView, Health, HostView};
use atoll_api::secret::SecretView;
use atoll_api::{
    ApplicationView, AuditEntry, DeploymentView, List, Manifest, ResourceView, SiteView,
};
use atoll_spec::units::{ByteSize, Cpu};
use atoll_spec::{Kind, Resource};

use crate::client::Client;
use crate::config::Config;
use crate::error::{CliError, Result};
use crate::output::{self, Format, Table, age};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// sites, apps, deployments, deviceclasses, hosts, secrets, manifest SITE, events SITE or
    /// audit.
    pub what: String,
    pub name: Option<String>,
    /// Only the hosts of this site (`get hosts`).
    #[arg(long)]
    pub site: Option<String>,
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

pub async fn run(args: Args) -> Result<()> {
    if args.site.is_some() && !matches!(args.what.as_str(), "hosts" | "host") {
        return Err(CliError::user(format!(
            "--site filters hosts only (`atoll get hosts --site SITE`), not {}",
            args.what
        )));
    }
    let client = Client::from_config(&Config::load()?)?;
    let text = match args.what.as_str() {
        "manifest" | "manifests" => {
            let site = args
                .name
                .as_deref()
                .ok_or_else(|| CliError::user("which site? `atoll get manifest SITE`"))?;
            let manifest: Manifest = client.get(&format!("/v1/sites/{site}/manifest")).await?;
            match args.output {
                Format::Json => output::json(&manifest)?,
                Format::Table | Format::Yaml => output::yaml(&manifest)?,
            }
        }
        "hosts" | "host" => {
            let list: List<HostView> = client.get("/v1/hosts").await?;
            let items = select_hosts(list.items, args.name.as_deref(), args.site.as_deref())?;
            match args.output {
                Format::Table if items.is_empty() => match &args.site {
                    Some(site) => format!("No hosts enrolled at site {site}.\n"),
                    None => "No hosts enrolled.\n".into(),
                },
                Format::Table => hosts_table(&items),
                Format::Yaml => output::yaml(&items)?,
                Format::Json => output::json(&List { items })?,
            }
        }
        "events" => {
            let site = args
                .name
                .as_deref()
                .ok_or_else(|| CliError::user("which site? `atoll get events SITE`"))?;
            let list: List<EventView> = client
                .get(&format!("/v1/sites/{site}/events?limit=1000"))
                .await?;
            match args.output {
                Format::Table => events_table(&list.items),
                Format::Yaml => output::yaml(&list.items)?,
                Format::Json => output::json(&list)?,
            }
        }
        "secrets" | "secret" => {
            let items: Vec<SecretView> = match args.name.as_deref() {
                Some(name) => vec![client.get(&format!("/v1/secrets/{name}")).await?],
                None => client.get::<List<SecretView>>("/v1/secrets").await?.items,
            };
            match args.output {
                Format::Table if items.is_empty() => "No secrets.\n".into(),
                Format::Table => secrets_table(&items),
                Format::Yaml => output::yaml(&items)?,
                Format::Json => output::json(&List { items })?,
            }
        }
        "audit" => {
            let list: List<AuditEntry> = client.get("/v1/audit").await?;
            match args.output {
                Format::Table => {
                    let mut t = Table::new(&["SEQ", "AT", "ACTOR", "ACTION", "DETAIL"]);
                    for e in list.items {
                        t.row(vec![e.seq.to_string(), e.at, e.actor, e.action, e.detail]);
                    }
                    t.render()
                }
                Format::Yaml => output::yaml(&list.items)?,
                Format::Json => output::json(&list)?,
            }
        }
        word => {
            let kind = Kind::from_user(word).ok_or_else(|| {
                CliError::user(format!(
                    "cannot get `{word}`: choose sites, apps, deployments, deviceclasses, hosts, secrets, manifest, events or audit"
                ))
            })?;
            get_kind(&client, kind, args.name.as_deref(), args.output).await?
        }
    };
    output::print(&text);
    Ok(())
}

/// The host named `name` (an error when there is none, at `site` if given), or every host of
/// `site`, or every host.
fn select_hosts(
    hosts: Vec<HostView>,
    name: Option<&str>,
    site: Option<&str>,
) -> Result<Vec<HostView>> {
    let items: Vec<HostView> = hosts
        .into_iter()
        .filter(|h| name.is_none_or(|n| h.id == n) && site.is_none_or(|s| h.site == s))
        .collect();
    match (name, site, items.is_empty()) {
        (Some(name), None, true) => Err(CliError::user(format!("host {name} does not exist"))),
        (Some(name), Some(site), true) => Err(CliError::user(format!(
            "host {name} does not exist at site {site}"
        ))),
        _ => Ok(items),
    }
}

/// One row per host: its connection, its role in the site cluster and health, its facts and
/// what it has left, what it runs and when it was last heard of.
pub fn hosts_table(items: &[HostView]) -> String {
    let mut t = Table::new(&[
        "HOST",
        "SITE",
        "STATUS",
        "ROLE",
        "HEALTH",
        "ARCH",
        "CPUS",
        "MEMORY",
        "FREE CPU",
        "FREE MEMORY",
        "RUNTIME",
        "APPLIED",
        "LAST SEEN",
        "LABELS",
    ]);
    for h in items {
        let i = &h.inventory;
        let (free_cpu, free_memory) = free(h);
        t.row(vec![
            h.id.clone(),
            h.site.clone(),
            match (&h.detached_at, h.connected, h.sealing_key_pending) {
                (Some(_), _, _) => "detached",
                (None, true, false) => "connected",
                (None, false, false) => "offline",
                (None, true, true) => "connected, key pending",
                (None, false, true) => "offline, key pending",
            }
            .into(),
            role(h).into(),
            host_health(h),
            i.arch.clone(),
            i.cpus.to_string(),
            ByteSize(i.memory_bytes).to_string(),
            free_cpu,
            free_memory,
            format!("{} {}", i.runtime.name, i.runtime.version),
            h.status
                .as_ref()
                .map_or_else(|| "-".into(), |s| s.applied_revision.to_string()),
            h.last_seen
                .as_deref()
                .map_or_else(|| "never".into(), |t| format!("{} ago", age(t))),
            output::labels(&h.labels),
        ]);
    }
    t.render()
}

/// The host's role in its site cluster: `leader`, `voter`, `non-voter`, `candidate`; `-` for a
/// host of a single-host site, a host that has not reported, and an agent older than the site
/// cluster, which cannot be told apart.
pub fn role(h: &HostView) -> &'static str {
    h.status
        .as_ref()
        .and_then(|s| s.cluster.as_ref())
        .map_or("-", |c| c.role.as_str())
}

/// The host's free CPU and memory, as the CLI prints CPU (`1500m`, `2`) and memory (`3Gi`);
/// `-` each when the host's agent has not said.
pub fn free(h: &HostView) -> (String, String) {
    match h.status.as_ref().and_then(|s| s.free) {
        Some(f) => (
            Cpu(u32::try_from(f.cpu_millis).unwrap_or(u32::MAX)).to_string(),
            ByteSize(f.memory_bytes).to_string(),
        ),
        None => ("-".into(), "-".into()),
    }
}

/// The health of the host's replicas, and the kind of its first condition, if any, as
/// [`health`] says a site's; `-` before its first status.
fn host_health(h: &HostView) -> String {
    let Some(status) = &h.status else {
        return "-".into();
    };
    let health = Health::of_hosts([status]);
    match status.conditions.first() {
        Some(c) => format!("{} ({})", health.as_str(), c.kind.as_str()),
        None => health.as_str().into(),
    }
}

/// Events as agents posted them, one a row.
pub fn events_table(events: &[EventView]) -> String {
    let mut t = Table::new(&["AT", "HOST", "KIND", "MESSAGE"]);
    for e in events {
        // A time claimed from the future is shown as received, and marked.
        let at = match e.claimed_at {
            Some(_) => format!("{} (received)", e.at),
            None => e.at.clone(),
        };
        t.row(vec![at, e.host.clone(), e.kind.clone(), e.message.clone()]);
    }
    t.render()
}

/// `connected`, `offline`, `no hosts`; with `, 12 reports dropped` when agents lost reports.
fn site_status(s: &SiteView) -> String {
    let status = match (s.hosts, s.connected) {
        (0, _) => "no hosts",
        (_, true) => "connected",
        (_, false) => "offline",
    };
    match s.dropped_reports {
        0 => status.to_owned(),
        1 => format!("{status}, 1 report dropped"),
        n => format!("{status}, {n} reports dropped"),
    }
}

pub fn sites_table(items: &[SiteView]) -> String {
    let mut t = Table::new(&[
        "NAME",
        "STATUS",
        "HEALTH",
        "HOSTS",
        "APPLIED/DESIRED",
        "APPS",
        "LABELS",
        "AGE",
    ]);
    for s in items {
        let labels = match &s.view.resource {
            Resource::Site(site) => output::labels(&site.labels),
            _ => String::new(),
        };
        let desired = s.revision.map_or_else(|| "-".into(), |r| r.to_string());
        let applied = s
            .applied_revision
            .map_or_else(|| "-".into(), |r| r.to_string());
        t.row(vec![
            s.view.resource.name().into(),
            site_status(s),
            health(s),
            s.hosts.to_string(),
            format!("{applied}/{desired}"),
            s.applications.len().to_string(),
            labels,
            age(&s.view.created_at),
        ]);
    }
    t.render()
}

/// The version targeted, marked while its rollout is rolled back or rolling back (the sites are
/// then given the previous one): `2.0.0 (rolled back)`.
pub fn target(d: &DeploymentView) -> String {
    let version = d.version.clone().unwrap_or_else(|| "<missing>".into());
    match d.rollout.as_deref() {
        Some(phase @ ("rolled_back" | "rolling_back")) => {
            format!("{version} ({})", phase.replace('_', " "))
        }
        _ => version,
    }
}

/// What the selected sites run, by version and count: `1.0.0=19,2.0.0=1`; `-` when none
/// reports a version yet, `?` from a control plane that does not say.
pub fn running(d: &DeploymentView) -> String {
    match &d.running {
        None => "?".into(),
        Some(r) if r.is_empty() => "-".into(),
        Some(r) => r
            .iter()
            .map(|(v, n)| format!("{v}={n}"))
            .collect::<Vec<_>>()
            .join(","),
    }
}

pub fn deployments_table(items: &[DeploymentView]) -> String {
    let mut t = Table::new(&[
        "NAME",
        "APPLICATION",
        "TARGET",
        "RUNNING",
        "SITES",
        "PLACEMENT",
        "AGE",
    ]);
    for d in items {
        let (app, placement) = match &d.view.resource {
            Resource::Deployment(dep) => (
                dep.application.clone(),
                dep.placement.sites.source().to_owned(),
            ),
            _ => Default::default(),
        };
        t.row(vec![
            d.view.resource.name().into(),
            app,
            target(d),
            running(d),
            d.sites.len().to_string(),
            placement,
            age(&d.view.created_at),
        ]);
    }
    t.render()
}

/// One row per secret and key, then per site the version asked for and what its hosts hold.
fn secrets_table(items: &[SecretView]) -> String {
    let mut t = Table::new(&[
        "SECRET",
        "VERSION",
        "KEY",
        "SOURCE",
        "KEY VERSION",
        "OWN VALUE AT",
    ]);
    for s in items {
        for k in &s.keys {
            t.row(vec![
                s.name.clone(),
                s.version.to_string(),
                k.key.clone(),
                k.source.clone(),
                k.version.to_string(),
                if k.sites.is_empty() {
                    "-".into()
                } else {
                    k.sites.join(",")
                },
            ]);
        }
    }
    let mut out = t.render();
    let mut sites = Table::new(&["SECRET", "SITE", "WANTS", "HOSTS HOLD"]);
    let mut any = false;
    for s in items {
        for site in &s.sites {
            any = true;
            let held: Vec<String> = site.hosts.iter().map(|(h, v)| format!("{h}={v}")).collect();
            sites.row(vec![
                s.name.clone(),
                site.site.clone(),
                site.version.to_string(),
                if held.is_empty() {
                    "-".into()
                } else {
                    held.join(",")
                },
            ]);
        }
    }
    if any {
        out.push('\n');
        out.push_str(&sites.render());
    }
    out
}

async fn fetch<T: serde::de::DeserializeOwned>(
    client: &Client,
    kind: Kind,
    name: Option<&str>,
) -> Result<Vec<T>> {
    match name {
        Some(name) => Ok(vec![
            client.get(&format!("/v1/{}/{name}", kind.plural())).await?,
        ]),
        None => Ok(client
            .get::<List<T>>(&format!("/v1/{}", kind.plural()))
            .await?
            .items),
    }
}

/// A site's health, and the kind of the first condition its hosts raised, if any: a site
/// whose host cannot keep its manifest must not read as healthy in the table.
fn health(s: &SiteView) -> String {
    match s.conditions.first() {
        Some(c) => format!("{} ({})", s.health.as_str(), c.condition.kind.as_str()),
        None => s.health.as_str().into(),
    }
}

async fn get_kind(
    client: &Client,
    kind: Kind,
    name: Option<&str>,
    format: Format,
) -> Result<String> {
    match kind {
        Kind::Site => {
            let items: Vec<SiteView> = fetch(client, kind, name).await?;
            let resources: Vec<&Resource> = items.iter().map(|i| &i.view.resource).collect();
            finish(format, name.is_some(), &items, &resources, || {
                sites_table(&items)
            })
        }
        Kind::Application => {
            let items: Vec<ApplicationView> = fetch(client, kind, name).await?;
            let resources: Vec<&Resource> = items.iter().map(|i| &i.view.resource).collect();
            finish(format, name.is_some(), &items, &resources, || {
                let mut t = Table::new(&[
                    "NAME",
                    "VERSION",
                    "SERVICES",
                    "VERSIONS",
                    "DEPLOYMENTS",
                    "AGE",
                ]);
                for a in &items {
                    let (version, services) = match &a.view.resource {
                        Resource::Application(app) => {
                            (app.version.clone(), app.services.len().to_string())
                        }
                        _ => Default::default(),
                    };
                    let deployments = if a.deployments.is_empty() {
                        "<none>".into()
                    } else {
                        a.deployments.join(",")
                    };
                    t.row(vec![
                        a.view.resource.name().into(),
                        version,
                        services,
                        a.versions.len().to_string(),
                        deployments,
                        age(&a.view.created_at),
                    ]);
                }
                t.render()
            })
        }
        Kind::Deployment => {
            let items: Vec<DeploymentView> = fetch(client, kind, name).await?;
            let resources: Vec<&Resource> = items.iter().map(|i| &i.view.resource).collect();
            finish(format, name.is_some(), &items, &resources, || {
                deployments_table(&items)
            })
        }
        Kind::DeviceClass => {
            let items: Vec<ResourceView> = fetch(client, kind, name).await?;
            let resources: Vec<&Resource> = items.iter().map(|i| &i.resource).collect();
            finish(format, name.is_some(), &items, &resources, || {
                device_classes_table(&items)
            })
        }
    }
}

pub fn device_classes_table(items: &[ResourceView]) -> String {
    let mut t = Table::new(&["NAME", "RULES", "GPU", "DESCRIPTION", "AGE"]);
    for v in items {
        let Resource::DeviceClass(c) = &v.resource else {
            continue;
        };
        t.row(vec![
            c.name.clone(),
            c.rules.len().to_string(),
            c.gpu.map_or("-", |g| g.as_str()).into(),
            c.description.clone().unwrap_or_default(),
            age(&v.created_at),
        ]);
    }
    t.render()
}

fn finish<T: serde::Serialize>(
    format: Format,
    single: bool,
    items: &[T],
    resources: &[&Resource],
    table: impl FnOnce() -> String,
) -> Result<String> {
    match format {
        Format::Table if items.is_empty() => Ok("No resources found.\n".into()),
        Format::Table => Ok(table()),
        Format::Yaml => output::yaml_documents(resources),
        Format::Json if single && items.len() == 1 => output::json(&items[0]),
        Format::Json => output::json(&serde_json::json!({ "items": items })),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const PWNED: &str = "\x1b]0;pwned\x07\x1b[2J";

    /// A site created "in the future", so its age prints `0s` whenever the test runs.
    pub(crate) fn site_view(dropped_reports: u64) -> SiteView {
        serde_json::from_value(serde_json::json!({
            "generation": 1,
            "created_at": "2999-01-01T00:00:00Z",
            "updated_at": "2999-01-01T00:00:00Z",
            "resource": { "kind": "Site", "name": "store-0042", "labels": { "region": "eu-north" } },
            "revision": 3,
            "applications": [],
            "hosts": 1,
            "connected": true,
            "applied_revision": 3,
            "health": "healthy",
            "dropped_reports": dropped_reports,
        }))
        .unwrap()
    }

    fn deployment_view(
        running: Option<serde_json::Value>,
        rollout: Option<&str>,
    ) -> DeploymentView {
        let mut json = serde_json::json!({
            "generation": 2,
            "created_at": "2026-11-22T10:00:00Z",
            "updated_at": "2026-11-22T10:00:00Z",
            "resource": {
                "kind": "Deployment", "name": "pos-prod", "application": "pos",
                "placement": { "sites": "region == eu-north" },
            },
            "version": "2.0.0",
            "sites": ["store-0042", "store-0043", "store-0044"],
        });
        if let Some(r) = running {
            json["running"] = r;
        }
        if let Some(p) = rollout {
            json["rollout"] = p.into();
        }
        serde_json::from_value(json).unwrap()
    }

    pub(crate) fn event(message: &str) -> EventView {
        EventView {
            host: "pi-1".into(),
            seq: 7,
            at: "2026-11-22T10:00:00Z".into(),
            kind: "container".into(),
            message: message.into(),
            received_at: "2026-11-22T10:00:01Z".into(),
            claimed_at: None,
        }
    }

    /// The cells of a table's first row.
    fn cells(text: &str) -> Vec<&str> {
        let row = text.lines().nth(1).unwrap_or_default();
        row.split("   ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect()
    }

    #[test]
    fn an_event_with_escape_sequences_is_printed_escaped_in_get_events() {
        let text = events_table(&[event(&format!("{PWNED}web exited"))]);
        assert!(
            text.contains("\\x1b]0;pwned\\x07\\x1b[2Jweb exited"),
            "{text}"
        );
        assert!(!text.contains('\x1b') && !text.contains('\x07'), "{text:?}");
        assert_eq!(output::terminal_safe(&text), text);
    }

    pub(crate) fn device_class_view() -> ResourceView {
        serde_json::from_value(serde_json::json!({
            "generation": 1,
            "created_at": "2999-01-01T00:00:00Z",
            "updated_at": "2999-01-01T00:00:00Z",
            "resource": {
                "kind": "DeviceClass", "name": "camera", "description": "USB cameras",
                "match": [
                    { "subsystem": "video4linux", "name": "*Camera*" },
                    { "vendor": "046d", "product": "08e5" },
                ],
            },
        }))
        .unwrap()
    }

    /// Host h1 of site store-0042, connected, with the status `status` if any.
    fn host_view(status: Option<serde_json::Value>) -> HostView {
        serde_json::from_value(serde_json::json!({
            "id": "h1", "site": "store-0042",
            "inventory": {
                "hostname": "h1", "arch": "arm64", "os": "Linux", "kernel": "6.1", "cpus": 4,
                "cpu_model": "", "memory_bytes": 8u64 << 30, "disk_bytes": 0,
                "runtime": { "name": "docker", "version": "27" },
            },
            "enrolled_at": "2999-01-01T00:00:00Z",
            "certificate_expires_at": "2999-02-01T00:00:00Z",
            "connected": true,
            "last_seen": "2999-01-01T00:00:00Z",
            "status": status,
        }))
        .unwrap()
    }

    /// The cells of column `name` of a table, one per row, read at the header's offsets.
    fn column(text: &str, name: &str) -> Vec<String> {
        let mut lines = text.lines();
        let header = lines.next().unwrap_or_default();
        let start = header
            .find(name)
            .unwrap_or_else(|| panic!("no {name} in {text}"));
        let end = header[start + name.len()..]
            .find(|c: char| c != ' ')
            .map_or(usize::MAX, |n| start + name.len() + n);
        lines
            .map(|l| {
                l.get(start..end.min(l.len()))
                    .unwrap_or("")
                    .trim()
                    .to_owned()
            })
            .collect()
    }

    /// Issue 15, item 6: `get hosts` shows each host's role in its site cluster, its health and
    /// what it has left; a host that says nothing of them (an older agent, a single-host site,
    /// no status yet) shows `-`.
    #[test]
    fn get_hosts_shows_each_hosts_role_health_and_free_resources() {
        let replica = serde_json::json!({
            "deployment": "pos", "service": "web", "replica": 0, "state": "running",
            "image": "web:1", "restarts": 0,
        });
        let cluster = |role: &str| {
            host_view(Some(serde_json::json!({
                "applied_revision": 3, "replicas": [replica],
                "cluster": { "role": role, "term": 2, "leader": "h1", "voters": ["h1"] },
                "free": { "cpu_millis": 1500, "memory_bytes": 3u64 << 30 },
            })))
        };
        let old = host_view(Some(serde_json::json!({
            "applied_revision": 3, "replicas": [replica],
            "conditions": [{ "kind": "manifest_not_kept", "message": "disk full", "since": "t" }],
        })));
        let items = [
            cluster("leader"),
            cluster("voter"),
            cluster("non_voter"),
            cluster("candidate"),
            cluster("witness"),
            old,
            host_view(None),
        ];
        let text = hosts_table(&items);
        assert_eq!(
            column(&text, "ROLE"),
            [
                "leader",
                "voter",
                "non-voter",
                "candidate",
                "unknown",
                "-",
                "-"
            ],
            "{text}"
        );
        assert_eq!(
            column(&text, "HEALTH")[4..],
            ["healthy", "degraded (manifest not kept)", "-"],
            "{text}"
        );
        assert_eq!(
            column(&text, "FREE CPU")[4..],
            ["1500m", "-", "-"],
            "{text}"
        );
        assert_eq!(
            column(&text, "FREE MEMORY")[4..],
            ["3Gi", "-", "-"],
            "{text}"
        );
        // The columns there were keep their cells.
        assert_eq!(column(&text, "CPUS")[0], "4", "{text}");
        assert_eq!(column(&text, "MEMORY")[0], "8Gi", "{text}");
        assert_eq!(column(&text, "APPLIED")[5..], ["3", "-"], "{text}");
    }

    #[test]
    fn get_hosts_site_keeps_the_hosts_of_that_site() {
        let mut other = host_view(None);
        other.id = "h2".into();
        other.site = "depot-7".into();
        let hosts = vec![host_view(None), other];
        let ids = |items: Vec<HostView>| items.into_iter().map(|h| h.id).collect::<Vec<_>>();
        assert_eq!(
            ids(select_hosts(hosts.clone(), None, None).unwrap()),
            ["h1", "h2"]
        );
        assert_eq!(
            ids(select_hosts(hosts.clone(), None, Some("depot-7")).unwrap()),
            ["h2"]
        );
        assert!(
            select_hosts(hosts.clone(), None, Some("nowhere"))
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            ids(select_hosts(hosts.clone(), Some("h1"), None).unwrap()),
            ["h1"]
        );
        let wrong_site = select_hosts(hosts, Some("h1"), Some("depot-7")).unwrap_err();
        assert!(
            wrong_site
                .to_string()
                .contains("host h1 does not exist at site depot-7"),
            "{wrong_site}"
        );
    }

    #[test]
    fn get_deviceclasses_lists_rules_and_gpu() {
        let text = device_classes_table(&[device_class_view()]);
        assert_eq!(
            cells(&text),
            ["camera", "2", "-", "USB cameras", "0s"],
            "{text}"
        );
    }

    #[test]
    fn get_sites_shows_the_reports_agents_dropped() {
        let text = sites_table(&[site_view(12)]);
        let row = text.lines().nth(1).unwrap();
        assert!(row.contains("connected, 12 reports dropped"), "{text}");
        let text = sites_table(&[site_view(0)]);
        assert!(!text.contains("dropped"), "{text}");
    }

    #[test]
    fn get_deployments_after_a_rollback_shows_the_target_and_what_sites_run() {
        let rolled_back =
            deployment_view(Some(serde_json::json!({ "1.0.0": 3 })), Some("rolled_back"));
        let text = deployments_table(&[rolled_back]);
        let header = text.lines().next().unwrap();
        assert!(
            header.contains("TARGET") && header.contains("RUNNING"),
            "{text}"
        );
        let row = text.lines().nth(1).unwrap();
        assert!(row.contains("2.0.0 (rolled back)"), "{text}");
        assert!(row.contains("1.0.0=3"), "{text}");
        // Mid-rollout: both versions, counted.
        let text = deployments_table(&[deployment_view(
            Some(serde_json::json!({ "1.0.0": 2, "2.0.0": 1 })),
            Some("running"),
        )]);
        assert_eq!(cells(&text)[2..4], ["2.0.0", "1.0.0=2,2.0.0=1"], "{text}");
        // An older control plane does not say what runs: `?`, not a guess.
        let text = deployments_table(&[deployment_view(None, None)]);
        assert_eq!(cells(&text)[2..4], ["2.0.0", "?"], "{text}");
    }
}
