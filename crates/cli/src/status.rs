//! `atoll status APP`: every site that should run an application × its services.

use atoll_api::agent::{AppStatus, Health, ReplicaHealth, ReplicaState, ReplicaStatus};

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
    let mut header = vec!["SITE", "CONNECTED", "VERSION", "HEALTH"];
    header.extend(status.services.iter().map(String::as_str));
    let mut table = Table::new(&header);
    for site in &status.sites {
        let health = Health::of(site.services.values().flatten());
        let mut row = vec![
            site.site.clone(),
            if site.connected { "yes" } else { "no" }.into(),
            site.version.clone(),
            health.as_str().into(),
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

/// `running 2/2`, or the least healthy state among the replicas: `pulling 0/1`, `failed 1/2`,
/// `unhealthy 1/1` (running but failing its check).
fn cell(replicas: &[ReplicaStatus]) -> String {
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
