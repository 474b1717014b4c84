//! `atoll status APP`: every site that should run an application × its services, and the
//! hosts that run them (each replica's host in `-o json`).

use atoll_api::agent::{AppStatus, Health, HostedReplica, ReplicaHealth, ReplicaState};

use crate::client::Client;
use crate::config::Config;
use crate::error::Result;
use crate::output::{self, Format, Table};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The application.
    pub app: String,
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

pub async fn run(args: Args) -> Result<()> {
    let client = Client::from_config(&Config::load()?)?;
    let status: AppStatus = client
        .get(&format!("/v1/applications/{}/status", args.app))
        .await?;
    let text = match args.output {
        Format::Table => render(&status),
        Format::Yaml => output::yaml(&status)?,
        Format::Json => output::json(&status)?,
    };
    output::print(&text);
    Ok(())
}

/// One row per site: connection, version, then one cell per service such as `running 2/2`.
pub fn render(status: &AppStatus) -> String {
    let mut not_placed = String::new();
    for u in &status.unplaced {
        not_placed.push_str(&format!(
            "not placed at {} (deployment {}): {}\n",
            u.site, u.deployment, u.reason
        ));
    }
    if status.sites.is_empty() {
        let why = if status.unplaced.is_empty() {
            " (no deployment selects a site for it)"
        } else {
            ""
        };
        return format!("No site runs {}{why}.\n{not_placed}", status.application);
    }
    let mut header = vec!["SITE", "CONNECTED", "VERSION", "HEALTH", "HOSTS"];
    header.extend(status.services.iter().map(String::as_str));
    let mut table = Table::new(&header);
    for site in &status.sites {
        let health = Health::of(site.services.values().flatten().map(|r| &r.status));
        let mut row = vec![
            site.site.clone(),
            if site.connected { "yes" } else { "no" }.into(),
            site.version.clone(),
            health.as_str().into(),
            hosts(site.services.values().flatten()),
        ];
        for service in &status.services {
            row.push(cell(
                site.services
                    .get(service)
                    .map(Vec::as_slice)
                    .unwrap_or_default(),
            ));
        }
        table.row(row);
    }
    table.render() + &not_placed
}

/// The hosts that run the replicas, in name order, once each: `h1,h2`; `-` when none is known
/// (no replica reported, or a control plane older than the replicas' `host`).
fn hosts<'a>(replicas: impl IntoIterator<Item = &'a HostedReplica>) -> String {
    let hosts: std::collections::BTreeSet<&str> = replicas
        .into_iter()
        .filter_map(|r| r.host.as_deref())
        .collect();
    if hosts.is_empty() {
        "-".into()
    } else {
        hosts.into_iter().collect::<Vec<_>>().join(",")
    }
}

/// `running 2/2`, or the least healthy state among the replicas: `pulling 0/1`, `failed 1/2`,
/// `unhealthy 1/1` (running but failing its check).
fn cell(replicas: &[HostedReplica]) -> String {
    let replicas: Vec<_> = replicas.iter().map(|r| &r.status).collect();
    if replicas.is_empty() {
        return "-".into();
    }
    let running = replicas
        .iter()
        .filter(|r| r.state == ReplicaState::Running)
        .count();
    let worst = replicas
        .iter()
        .map(|r| r.state)
        .filter(|s| *s != ReplicaState::Running)
        .max_by_key(|s| severity(*s));
    let word = match worst {
        Some(state) => state.as_str(),
        None if replicas
            .iter()
            .any(|r| matches!(r.health, Some(ReplicaHealth::Unhealthy { .. }))) =>
        {
            "unhealthy"
        }
        None if replicas
            .iter()
            .any(|r| r.health == Some(ReplicaHealth::Starting)) =>
        {
            "starting"
        }
        None => "running",
    };
    format!("{word} {running}/{}", replicas.len())
}

fn severity(state: ReplicaState) -> u8 {
    match state {
        ReplicaState::Running => 0,
        ReplicaState::Starting => 1,
        ReplicaState::Replacing => 2,
        ReplicaState::Pulling => 3,
        ReplicaState::Missing => 4,
        ReplicaState::Failed => 5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Application pos at site store-0042 with `web` replicas as `rows` (JSON as the control
    /// plane sends them).
    fn app_status(rows: serde_json::Value) -> AppStatus {
        serde_json::from_value(serde_json::json!({
            "application": "pos", "services": ["web"],
            "sites": [{
                "site": "store-0042", "deployment": "pos-eu", "version": "1", "connected": true,
                "services": { "web": rows },
            }],
        }))
        .unwrap()
    }

    fn web(index: u32, host: Option<&str>) -> serde_json::Value {
        let mut row = serde_json::json!({
            "deployment": "pos-eu", "service": "web", "replica": index, "state": "running",
            "image": "web:1", "restarts": 0,
        });
        if let Some(h) = host {
            row["host"] = h.into();
        }
        row
    }

    /// Issue 15, item 6: `atoll status APP` says which hosts run the application at each site,
    /// and `-o json` which host runs each replica.
    #[test]
    fn status_says_which_hosts_run_the_replicas() {
        let status = app_status(serde_json::json!([
            web(0, Some("h2")),
            web(1, Some("h1")),
            web(2, Some("h2")),
        ]));
        let text = render(&status);
        let row: Vec<&str> = text.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(
            row,
            [
                "store-0042",
                "yes",
                "1",
                "healthy",
                "h1,h2",
                "running",
                "3/3"
            ]
        );
        assert!(text.lines().next().unwrap().contains("HOSTS"), "{text}");
        let json: serde_json::Value =
            serde_json::from_str(&output::json(&status).unwrap()).unwrap();
        let hosts: Vec<&str> = json["sites"][0]["services"]["web"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["host"].as_str().unwrap())
            .collect();
        assert_eq!(hosts, ["h2", "h1", "h2"]);
    }

    /// A control plane older than the replicas' `host` does not say: `-`, not a guess.
    #[test]
    fn status_from_an_older_control_plane_shows_no_hosts() {
        let text = render(&app_status(serde_json::json!([web(0, None)])));
        let row: Vec<&str> = text.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(
            row,
            ["store-0042", "yes", "1", "healthy", "-", "running", "1/1"]
        );
        let text = render(&app_status(serde_json::json!([])));
        assert!(text.lines().nth(1).unwrap().contains(" - "), "{text}");
    }
}
