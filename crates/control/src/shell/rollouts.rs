//! The rollout controller's loop: it feeds every running rollout what the sites reported and
//! the passing of time, and commits whatever the machine decides. It looks when a report
//! arrives and once a second (soaks end, sites go offline); a step that changes nothing writes
//! nothing. Everything it needs is in the store, so after a restart it carries on at once.
//!
//! Several replicas may share one store: the loop steps rollouts only while its process holds
//! the lease [`LEASE`] (`shell::lease`), checked before every step, and its commits are fenced
//! with it, so one replica steps at a time and a replica that lost the lease cannot write.

use std::time::Duration;

use tokio::sync::watch;

use super::agents::Agents;
use super::lease::{Lease, Timing};
use super::service::ControlPlane;
use crate::core::feed::site_report;
use crate::core::rollout::{Event, Phase, SiteState};
use crate::core::views::Observed;

/// The lease the rollout controller runs under.
pub const LEASE: &str = "rollouts";

/// Taken for 5 s, renewed every second: a dead holder's rollouts carry on elsewhere within
/// 6 s.
pub const LEASE_TIMING: Timing = Timing {
    ttl: Duration::from_secs(5),
    every: Duration::from_secs(1),
};

/// This process's name as a lease holder: its process id and a random part, unique among
/// replicas and restarts.
pub fn holder_id() -> String {
    format!("{}-{:016x}", std::process::id(), rand::random::<u64>())
}

#[derive(Debug)]
pub struct Controller {
    pub control: ControlPlane,
    pub agents: Agents,
    /// The lease [`LEASE`], kept by this process.
    pub lease: Lease,
    pub shutdown: watch::Receiver<bool>,
}

impl Controller {
    pub async fn run(mut self) {
        let reported = self.agents.reported();
        loop {
            tokio::select! {
                _ = self.shutdown.changed() => return,
                () = reported.notified() => {}
                () = self.lease.taken() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            if let Err(e) = self.round().await {
                tracing::warn!(error = %e, "rollout controller round failed; retrying");
            }
        }
    }

    /// One pass over the active rollouts, if this process holds the lease; returns how many
    /// it stepped.
    pub async fn round(&self) -> Result<usize, super::service::Error> {
        let Some(fence) = self.lease.fence() else {
            return Ok(0);
        };
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
            return Ok(0);
        }
        let hosts = self.agents.store().hosts().await?;
        let statuses = self.agents.statuses().await?;
        // Indexed once per pass: at ten thousand sites, looking each site's hosts and presence
        // up by scanning every host made a pass quadratic.
        let observed = Observed::new(&hosts, &statuses);
        let connectivity = self.agents.fleet().connectivity();
        let mut stepped = 0;
        for (name, rollout) in active {
            if self.lease.fence() != Some(fence) {
                // Lost meanwhile: not one more step.
                return Ok(stepped);
            }
            let mut events: Vec<Event> = rollout
                .sites
                .keys()
                .map(|site| {
                    let replicas = observed.replicas(site, &name);
                    // A site with no host cannot be in touch, whatever the grace after a restart.
                    let connected =
                        !observed.hosts(site).is_empty() && connectivity.presumed_connected(site);
                    Event::Report(site_report(site, &replicas, connected))
                })
                .collect();
            events.push(Event::Tick);
            match self
                .control
                .drive_rollout_fenced(&name, &events, self.lease.name(), fence)
                .await
            {
                Ok(_) => stepped += 1,
                Err(e) => tracing::warn!(deployment = %name, error = %e, "rollout step failed"),
            }
        }
        Ok(stepped)
    }
}
