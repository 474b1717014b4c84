//! `GET /v1/applications` and an application's status: its versions and deployments, and,
//! for each site it is placed at (`State::placed`), what the site's hosts report of each
//! service, each replica with the host that runs it.

use std::collections::BTreeMap;

use atoll_api::agent::{AppStatus, HostedReplica, SiteAppStatus};
use atoll_api::{ApplicationView, Unplaced, VersionInfo};
use atoll_store::ResourceRow;

use super::{Observed, resource};
use crate::core::state::{State, Versions};

/// The view of the application stored as `row`, with every version ever applied.
pub fn application(
    row: &ResourceRow,
    state: &State,
    versions: Vec<VersionInfo>,
) -> Result<ApplicationView, String> {
    Ok(ApplicationView {
        view: resource(row)?,
        versions,
        deployments: state
            .deployments
            .values()
            .filter(|d| d.value.application == row.name)
            .map(|d| d.value.name.clone())
            .collect(),
    })
}

/// Sites × services of application `app` from its hosts' newest reports, and the sites a
/// deployment of it selects where it is not placed, with why; `connected` says whether a
/// site is in touch now. None when there is no such application.
pub fn status(
    app: &str,
    state: &State,
    versions: &Versions,
    observed: &Observed<'_>,
    connected: impl Fn(&str) -> bool,
) -> Option<AppStatus> {
    let services = state
        .applications
        .get(app)?
        .value
        .services
        .iter()
        .map(|s| s.name.clone())
        .collect();
    let mut sites = Vec::new();
    let mut unplaced = Vec::new();
    for entry in state.sites.values() {
        let site = &entry.value.name;
        let placed = state.placed(&entry.value, versions);
        for p in placed
            .placements
            .iter()
            .filter(|p| p.application.name == app)
        {
            let mut by_service: BTreeMap<String, Vec<HostedReplica>> = BTreeMap::new();
            for (host, r) in observed.hosted(site, &p.deployment.name) {
                by_service
                    .entry(r.service.clone())
                    .or_default()
                    .push(HostedReplica {
                        host: Some(host.to_owned()),
                        status: r.clone(),
                    });
            }
            sites.push(SiteAppStatus {
                connected: connected(site),
                site: site.clone(),
                deployment: p.deployment.name.clone(),
                version: p.application.version.clone(),
                services: by_service,
            });
        }
        for (deployment, reason) in placed.unplaced {
            if state
                .deployments
                .get(&deployment)
                .is_some_and(|d| d.value.application == app)
            {
                unplaced.push(Unplaced {
                    site: site.clone(),
                    deployment,
                    reason,
                });
            }
        }
    }
    Some(AppStatus {
        application: app.to_owned(),
        services,
        sites,
        unplaced,
    })
}

#[cfg(test)]
mod tests {
    use atoll_spec::Kind;

    use super::*;
    use crate::core::views::fixtures::{host, replica, row, state, statuses};

    const FLEET: &str = "\
kind: Application
name: pos
version: '3'
services:
  - name: api
    image: api:3
  - name: db
    image: db:3
---
kind: Application
name: other
version: '1'
services:
  - name: x
    image: x:1
---
kind: Deployment
name: pos-eu
application: pos
placement:
  sites: 'region == eu'
---
kind: Deployment
name: other-eu
application: other
placement:
  sites: 'region == eu'
---
kind: Deployment
name: pos-gpu
application: pos
placement:
  sites: 'region == eu'
  hosts: 'gpu == yes'
---
kind: Site
name: paris
labels: {region: eu}
";

    #[test]
    fn an_application_lists_the_deployments_that_run_it() {
        let state = state(FLEET);
        let view = application(
            &row(&state, Kind::Application, "pos"),
            &state,
            vec![VersionInfo {
                version: "3".into(),
                applied_at: "2026-01-01T00:00:00Z".into(),
            }],
        )
        .unwrap();
        assert_eq!(view.deployments, ["pos-eu", "pos-gpu"]);
        assert_eq!(view.versions.len(), 1);
    }

    /// Issue 15, item 6: `atoll status APP` says which host runs each replica.
    #[test]
    fn each_replica_of_a_site_of_two_hosts_says_the_host_that_runs_it() {
        let state = state(FLEET);
        let hosts = [host("p1", "paris"), host("p2", "paris")];
        let reports = statuses(&[
            ("p1", 1, vec![replica("pos-eu", "api", "3")]),
            (
                "p2",
                1,
                vec![replica("pos-eu", "api", "3"), replica("pos-eu", "db", "3")],
            ),
        ]);
        let status = status(
            "pos",
            &state,
            &Versions::new(),
            &Observed::new(&hosts, &reports),
            |_| true,
        )
        .unwrap();
        let on: Vec<(&str, Option<&str>)> = status.sites[0]
            .services
            .iter()
            .flat_map(|(s, rs)| rs.iter().map(move |r| (s.as_str(), r.host.as_deref())))
            .collect();
        assert_eq!(
            on,
            [("api", Some("p1")), ("api", Some("p2")), ("db", Some("p2"))]
        );
    }

    #[test]
    fn an_applications_status_groups_its_sites_replicas_by_service() {
        let state = state(FLEET);
        let hosts = [host("p1", "paris")];
        let reports = statuses(&[(
            "p1",
            1,
            vec![
                replica("pos-eu", "api", "3"),
                replica("pos-eu", "db", "3"),
                replica("other-eu", "x", "1"),
            ],
        )]);
        let status = status(
            "pos",
            &state,
            &Versions::new(),
            &Observed::new(&hosts, &reports),
            |site| site == "paris",
        )
        .unwrap();
        assert_eq!(status.services, ["api", "db"]);
        assert_eq!(status.sites.len(), 1);
        let paris = &status.sites[0];
        assert_eq!(
            (
                paris.site.as_str(),
                paris.deployment.as_str(),
                paris.version.as_str()
            ),
            ("paris", "pos-eu", "3")
        );
        assert!(paris.connected);
        let services: Vec<(&str, usize)> = paris
            .services
            .iter()
            .map(|(s, r)| (s.as_str(), r.len()))
            .collect();
        assert_eq!(services, [("api", 1), ("db", 1)]);
        let hosts: Vec<Option<&str>> = paris
            .services
            .values()
            .flatten()
            .map(|r| r.host.as_deref())
            .collect();
        assert_eq!(
            hosts,
            [Some("p1"), Some("p1")],
            "each replica says its host"
        );
        assert_eq!(status.unplaced.len(), 1, "no host of paris has a gpu");
        assert_eq!(status.unplaced[0].deployment, "pos-gpu");
    }

    #[test]
    fn no_status_of_an_application_that_does_not_exist() {
        let state = state(FLEET);
        let none = statuses(&[]);
        let observed = Observed::new(&[], &none);
        assert!(status("nope", &state, &Versions::new(), &observed, |_| true).is_none());
    }
}
