//! `GET /v1/deployments`: the version a deployment targets (`State::resolve`), where it is
//! placed and where not with why (`State::targeting`), its rollout's phase, and how many of
//! its sites run each version (`feed::running`).

use atoll_api::{DeploymentView, Unplaced};
use atoll_spec::Resource;
use atoll_store::ResourceRow;

use super::rollouts::phase;
use super::{Observed, resource};
use crate::core::feed;
use crate::core::state::{State, Versions};

/// The view of the deployment stored as `row`.
pub fn deployment(
    row: &ResourceRow,
    state: &State,
    versions: &Versions,
    observed: &Observed<'_>,
) -> Result<DeploymentView, String> {
    let view = resource(row)?;
    let (version, sites, unplaced) = match &view.resource {
        Resource::Deployment(d) => {
            let targeting = state.targeting(d, versions);
            (
                state.resolve(d, versions).map(|a| a.version.clone()),
                targeting.sites.into_iter().map(|s| s.name).collect(),
                targeting
                    .unplaced
                    .into_iter()
                    .map(|(site, reason)| Unplaced {
                        site,
                        deployment: d.name.clone(),
                        reason,
                    })
                    .collect(),
            )
        }
        _ => (None, Vec::<String>::new(), Vec::new()),
    };
    let running = feed::running(sites.iter().map(|site| observed.replicas(site, &row.name)));
    Ok(DeploymentView {
        version,
        sites,
        rollout: state
            .rollouts
            .get(&row.name)
            .map(|r| phase(&r.phase).0.to_owned()),
        running: Some(running),
        unplaced,
        view,
    })
}

#[cfg(test)]
mod tests {
    use atoll_api::host::Host;
    use atoll_spec::Kind;

    use super::*;
    use crate::core::views::fixtures::{host, replica, row, state, statuses};

    const FLEET: &str = "\
kind: Application
name: vision
version: '2'
services:
  - name: detect
    image: detect:2
---
kind: Deployment
name: vision-eu
application: vision
placement:
  sites: 'region == eu'
  hosts: 'camera == yes'
---
kind: Site
name: paris
labels: {region: eu}
---
kind: Site
name: lyon
labels: {region: eu}
---
kind: Site
name: boston
labels: {region: us}
";

    fn camera_host(name: &str) -> Host {
        Host {
            name: name.into(),
            inventory: atoll_api::host::Inventory {
                capabilities: atoll_api::host::capability::ALL
                    .iter()
                    .map(|c| (*c).to_owned())
                    .collect(),
                ..Default::default()
            },
            labels: [("camera".to_owned(), "yes".to_owned())].into(),
        }
    }

    #[test]
    fn a_deployment_shows_where_it_is_placed_where_not_and_what_runs() {
        let mut state = state(FLEET);
        state.hosts.insert("paris".into(), vec![camera_host("p1")]);
        let hosts = [host("p1", "paris"), host("l1", "lyon")];
        let reports = statuses(&[("p1", 1, vec![replica("vision-eu", "detect", "2")])]);
        let view = deployment(
            &row(&state, Kind::Deployment, "vision-eu"),
            &state,
            &Versions::new(),
            &Observed::new(&hosts, &reports),
        )
        .unwrap();
        assert_eq!(view.version.as_deref(), Some("2"));
        assert_eq!(view.sites, ["paris"], "boston is not selected: {view:?}");
        assert_eq!(view.unplaced.len(), 1);
        assert_eq!(view.unplaced[0].site, "lyon");
        assert_eq!(view.unplaced[0].deployment, "vision-eu");
        assert!(!view.unplaced[0].reason.is_empty());
        assert_eq!(view.running, Some([("2".to_owned(), 1)].into()));
        assert_eq!(view.rollout, None);
    }

    #[test]
    fn the_sites_a_deployment_shows_are_the_ones_its_rollouts_count() {
        let mut state = state(FLEET);
        state.hosts.insert("lyon".into(), vec![camera_host("l1")]);
        let d = &state.deployments["vision-eu"].value;
        let targets: Vec<String> = state
            .targets(d, &Versions::new())
            .into_iter()
            .map(|s| s.name)
            .collect();
        let view = deployment(
            &row(&state, Kind::Deployment, "vision-eu"),
            &state,
            &Versions::new(),
            &Observed::new(&[], &statuses(&[])),
        )
        .unwrap();
        assert_eq!(view.sites, targets);
        assert_eq!(view.running, Some(Default::default()));
    }
}
