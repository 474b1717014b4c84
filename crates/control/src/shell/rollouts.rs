//! The rollout controller's loop: it feeds every running rollout what the sites reported and
//! the passing of time, and commits whatever the machine decides. It looks when a report
//! arrives and once a second (soaks end, sites go offline); a step that changes nothing writes
//! nothing. Everything it needs is in the store, so after a restart it carries on at once.

use std::collections::HashMap;
use std::time::Duration;

use atoll_store::HostRow;
use tokio::sync::watch;

use super::agents::Agents;
use super::service::ControlPlane;
use crate::core::feed::site_report;
use crate::core::rollout::{Event, Phase, SiteState};

#[derive(Debug)]
pub struct Controller {
    pub control: ControlPlane,
    pub agents: Agents,
    pub shutdown: watch::Receiver<bool>,
}

impl Controller {
    pub async fn run(mut self) {
        let reported = self.agents.reported();
        loop {
            tokio::select! {
                _ = self.shutdown.changed() => return,
                () = reported.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            if let Err(e) = self.round().await {
                tracing::warn!(error = %e, "rollout controller round failed; retrying");
            }
        }
    }

    async fn round(&self) -> Result<(), super::service::Error> {
        let rollouts = self.control.rollouts().await?;
        // Running rollouts, and finished ones with sites still to hear from: a site back after
        // completion still has its outcome recorded, a late one finishes its rollback.
        let active: Vec<_> = rollouts
            .into_iter()
            .filter(|(_, r)| {
                matches!(
                    r.phase,
                    Phase::Running | Phase::Paused { .. } | Phase::RollingBack { .. }
                ) || (!matches!(r.phase, Phase::Superseded { .. })
                    && r.sites.values().any(|p| {
                        matches!(
                            p.state,
                            SiteState::Pending { .. }
                                | SiteState::Updating { .. }
                                | SiteState::Soaking { .. }
                                | SiteState::Reverting { .. }
                        )
                    }))
            })
            .collect();
        if active.is_empty() {
            return Ok(());
        }
        let hosts = self.agents.store().hosts().await?;
        let statuses = self.agents.statuses().await?;
        // Indexed once per pass: at ten thousand sites, looking each site's hosts and presence
        // up by scanning every host made a pass quadratic.
        let mut by_site: HashMap<&str, Vec<&HostRow>> = HashMap::new();
        for h in &hosts {
            by_site.entry(h.site.as_str()).or_default().push(h);
        }
        let connectivity = self.agents.fleet().connectivity();
        for (name, rollout) in active {
            let mut events: Vec<Event> = rollout
                .sites
                .keys()
                .map(|site| {
                    let site_hosts = by_site.get(site.as_str()).map_or(&[][..], Vec::as_slice);
                    let replicas = Agents::replicas_of(&statuses, site_hosts, &name);
                    // A site with no host cannot be in touch, whatever the grace after a restart.
                    let connected = !site_hosts.is_empty() && connectivity.presumed_connected(site);
                    Event::Report(site_report(site, &replicas, connected))
                })
                .collect();
            events.push(Event::Tick);
            if let Err(e) = self.control.drive_rollout(&name, &events, None).await {
                tracing::warn!(deployment = %name, error = %e, "rollout step failed");
            }
        }
        Ok(())
    }
}
